"""What a proposed change is: SEARCH/REPLACE edits applied in memory, hunks located in a buffer,
diff summaries. Knows no git, no processes."""
