"""One workspace folder as an editor sees it (Session) and what an editor shows on a file (annotate),
as plain data. Knows no LSP."""
