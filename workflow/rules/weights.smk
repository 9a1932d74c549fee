# Every pretrained file the configured run needs, in one folder (weights.folder), with a manifest of each
# file's source, tag and SHA-256 (src/mammoflow/weights/, docs/training.md). A local rule: on a cluster it
# runs on the login node, which reaches the network; no job does.


rule weights:
    output:
        manifest=f"{WEIGHTS_DIR}/{weights_catalog.MANIFEST}",
    params:
        folder=parent("manifest"),
        need=weights_needed(),
        absent=weights_absent,
        code=code_digest("weights"),
    log:
        "logs/weights.log",
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m mammoflow weights --folder {params.folder:q} --need {params.need:q} > {log:q} 2>&1"
