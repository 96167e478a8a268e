"""Privacy by design: user ids are pseudonymized before anything is written."""

from journeymap.privacy.pseudonymize import Pseudonymizer, pseudonymize

__all__ = ["Pseudonymizer", "pseudonymize"]
