"""unfoldgen: compile iterative-solver specs into trainable deep-unfolded PyTorch networks."""

__version__ = "0.1.0"
