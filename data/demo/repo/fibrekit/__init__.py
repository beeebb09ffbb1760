"""fibrekit: small helpers for planning fibre links."""
