"""The contact policy: pure rules deciding whether, when and why a message may be sent."""
