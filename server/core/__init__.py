"""The vocabulary every layer speaks: typed records and enums, settings, the keep/discard policy and
its statistics. Standard library only."""
