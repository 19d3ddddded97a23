"""Seed a fresh local AWS endpoint with what a real account already has.

In a real account the operators create the two secrets by hand, and AWS
publishes the Amazon Linux AMI parameters. A fresh local endpoint has
neither, so the demo and tests create them. Idempotent.
"""
import json
import os

import boto3

NAME = os.environ.get("DEVSTACK_NAME", "prog-strength-developer")

sm = boto3.client("secretsmanager")
for secret in ("claude-credentials", "github-app"):
    try:
        sm.describe_secret(SecretId=f"{NAME}/{secret}")
    except sm.exceptions.ResourceNotFoundException:
        sm.create_secret(Name=f"{NAME}/{secret}", SecretString=json.dumps({"placeholder": True}))

ec2 = boto3.client("ec2")
ssm = boto3.client("ssm")
images = ec2.describe_images(Owners=["amazon"])["Images"]
for arch, param in (
    ("x86_64", "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"),
    ("arm64", "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"),
):
    try:
        ssm.get_parameter(Name=param)
        continue
    except ssm.exceptions.ParameterNotFound:
        pass
    image = next((i for i in images if i.get("Architecture") == arch), images[0])
    ssm.put_parameter(Name=param, Value=image["ImageId"], Type="String", Overwrite=True)
print("seeded: secrets and AMI parameters")
