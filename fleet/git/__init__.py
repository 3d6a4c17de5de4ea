"""Git operations over paths, returning plain data. No Django imports here."""
