"""The names of the reproductions, as plain data: what `noiselab reproduce` offers and which of them run on Ray.

The CLI reads these to parse its arguments without importing the experiments (their sweeps, attacks and charts);
reproduce.EXPERIMENTS maps the same names to the functions, and tests/test_layering.py holds the two to one list.
"""

EXPERIMENT_NAMES = ("fig3", "fig4", "fig5", "fig6", "fig7", "table1", "meanpath", "losses", "placement", "sigmascale",
                    "attackloss", "recipe")

# plain sweeps; table1 records σ at every step, fig7 and attackloss their own rows in-process
RAY_READY = ("fig4", "fig5", "fig6", "losses", "placement", "sigmascale", "recipe")
