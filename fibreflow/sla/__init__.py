"""Data-freshness SLA monitoring: config, checks, monitor, alerts, compliance."""
