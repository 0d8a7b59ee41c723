"""Event-sourced views, pure: calendar, campaigns (and joint proposals), folded from logs."""
