"""What is kept: the git store (worktrees, branch, refs), the append-only ledger and results.tsv, the loop's lock."""
