"""Azure: preflight, pricing, the cloud-side stop, deploy, destroy and status, one module each.

names      names, tags and the VM's role every part agrees on (the Pulumi program too)
schedule   the cloud-side stop: the shutdown schedule's time and the Windows time zone
credentials, http, arm   who is signed in; ARM REST behind the AzureApi interface
errors     the Azure error codes a user meets, each with its fix
pricing    compute, OS disk and public IP rates (live retail prices, else the catalog)
preflight  rights, resource providers, offering, Spot, quota — before anything exists
pulumi_cli the Pulumi CLI with a file backend and its project/config under .state/
deploy, destroy, status   the commands (wired up in rig/azure_cli.py)

Only this package and pulumi_azure/ talk to Azure. Kept import-light: the Pulumi program
imports rig.azure.names and rig.azure.schedule.
"""
