"""nucstudy: nuclear instance segmentation and classification in H&E histology."""

__version__ = "0.1.0"
