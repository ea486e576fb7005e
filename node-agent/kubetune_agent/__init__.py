"""kubetune node agent: host metrics, bounded reversible tuning knobs, the NodeTuning contract."""
