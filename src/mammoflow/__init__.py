"""mammoflow: a Snakemake workflow reproducing Prodan et al. 2023 (Appl. Sci. 13, 4272)."""

__version__ = "0.2.0"
