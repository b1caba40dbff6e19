"""Recording CALVIN-format datasets: the scripted expert in an env, its frames through the dataset writer.

    python -m harness.record OUT --episodes 200 --workers 8        # or scripts/collect_data.sh

An application of the layers below it (harness.envs, agents.scripted, harness.data's writer), beside the
evaluation.
"""
