"""Literals the core tests share: a fixed wall clock and one eauth token's record."""

NOW = 1_700_000_000.0
TOKEN = "0123456789abcdef" * 4
RECORD = {"token": TOKEN, "start": NOW, "expire": NOW + 100, "name": "saltuser", "eauth": "pam"}
