import sys

from unfoldgen.cli import main

sys.exit(main())
