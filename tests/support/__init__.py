"""Test doubles that are real servers or fakes implementing ports, shared across suites."""
