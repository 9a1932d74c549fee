# mammoflow: Prodan et al. 2023 (Appl. Sci. 13, 4272) as a Snakemake workflow. See README.md.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"


rule all:
    input:
        data_targets(),
    default_target: True
