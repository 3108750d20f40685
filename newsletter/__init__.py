"""newsletter: write an email newsletter in Markdown, keep the list, send it through SendGrid."""

__version__ = "0.1.0"
