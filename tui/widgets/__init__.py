"""Widgets of the taskdash dashboard."""
