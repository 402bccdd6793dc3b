"""Lab infrastructure beside the droplets: the DNS server (knot) and the test CA (Pebble)."""
