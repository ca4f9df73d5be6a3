"""glasschat's user side: the Textual app and the headless command line."""
