"""What the Snakemake driver works out before any job runs: the data source and its checks, the GAN's
stages, the predict choice, the rules' shell set-up and each rule's code trigger. The rule files
(workflow/rules/*.smk) hold rules, targets and input functions, and take everything else from here.

The driver may be a plain Snakemake without mammoflow's other dependencies (as with
``--software-deployment-method conda``): these modules need the standard library, PyYAML and jsonschema.
"""
