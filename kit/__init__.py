"""kit: a Kaggle-style notebook competition kit for image classification."""

__version__ = "0.2.0"


class KitError(Exception):
    """A problem the user can fix; the message says what and how."""
