"""AWS: the only package that imports boto3 (in the modules that call AWS, never here).

By job: `preflight` (credentials, offerings, quotas, live prices, pins), `pricing` (the
catalog's rates and rig.cost's one formula), `deploy` and `destroy` (the lifecycle: the CDK CLI
prepares a change set, boto3 does the rest; destroy needs no Node.js), `scan` (the orphan scan),
`status` (the live provider of `rig status`). Support: `names`, `errors`, `session`, `access`,
`cdk_cli`, `changeset`, `stacks`.
"""

from rig.status import register_live

# `python -m rig status` asks EC2 through this (rig.aws_cli also registers it on import).
register_live("aws", "rig.aws.status:live_row")
