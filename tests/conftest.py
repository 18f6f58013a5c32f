"""Shared by every tier. Builders and time constants live in `tests.vocabulary`, the
KeyedProcessFunction harness in `tests.harness`; nothing is registered here."""
