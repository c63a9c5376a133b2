"""Names only frameworks call (vulture cannot see the call): none needed yet."""
