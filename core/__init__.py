"""Shared core of Agent Monitor: settings, database, tables and payload types. Imports nothing of ours."""
