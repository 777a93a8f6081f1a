"""Blended ranking and the offline A/B simulator."""
