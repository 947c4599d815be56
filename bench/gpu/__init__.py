"""The GPU check (``check.sh``), its step-time profile (``profile``) and the payoff timing
(``payoff``): what one device call runs, each part rehearsed on a CPU."""
