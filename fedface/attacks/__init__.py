"""Attacks of a malicious server on what clients send (DESIGN.md "Malicious server"); one module per attack."""
