"""Screens and dialogs of the taskdash dashboard."""
