"""ponder: make a language model answer better by spending more compute at inference time."""

__version__ = "0.1.0"
