"""The emitters: ``model`` (torch) and ``kernels`` (numba) side by side, both built on ``base``
(template environment, helper modules copied into generated code, formatting)."""

from unfoldgen.emit.base import format_python, helper_closure, helper_sources, template_environment

__all__ = ["format_python", "helper_closure", "helper_sources", "template_environment"]
