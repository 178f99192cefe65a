"""deployments/aws/pixelflow.yaml: valid for cfn-lint, least-privilege by construction, and
deployable: created in moto's CloudFormation (session moto server, over HTTP), then one upload
goes through what it created (upload bucket -> notification -> queue -> flow -> production
bucket)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import unquote_plus

import pytest
import yaml

from tests.conftest import make_clip

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deployments" / "aws" / "pixelflow.yaml"

# Symbolic values for reading the template's policies: pseudo parameters and NamePrefix.
SYMBOLS = {"AWS::Partition": "aws", "AWS::AccountId": "123456789012", "AWS::Region": "us-east-1", "NamePrefix": "pf"}
UPLOAD = "arn:aws:s3:::pf-uploads-123456789012-us-east-1"
OUTPUT = "<OutputBucket.Arn>"
RESULTS = "<ResultsBucket.Arn>"


class _TemplateLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !Sub, !GetAtt...) as their long forms."""


def _intrinsic(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_TemplateLoader.add_multi_constructor("!", _intrinsic)


def load_template() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=_TemplateLoader)


def _statements(statements: list) -> list[dict]:
    """Policy statements, with conditional ones (Fn::If) taken as if their condition held."""
    result = []
    for statement in statements:
        if "Fn::If" in statement:
            statement = statement["Fn::If"][1]
        result.append(statement)
    return result


def render(value):
    """Intrinsic functions as readable strings: Ref/GetAtt become <Name> / <Name.Attr>."""
    if isinstance(value, list):
        return [render(item) for item in value]
    if isinstance(value, dict) and len(value) == 1:
        (function, argument), = value.items()
        if function == "Ref":
            return SYMBOLS.get(argument, f"<{argument}>")
        if function == "Fn::GetAtt":
            parts = argument.split(".") if isinstance(argument, str) else argument
            return f"<{parts[0]}.{parts[1]}>"
        if function == "Fn::If":  # as if its condition held
            return render(argument[1])
        if function == "Fn::Sub":
            text = argument if isinstance(argument, str) else argument[0]
            return re.sub(r"\$\{([^}]+)\}", lambda m: SYMBOLS.get(m[1], f"<{m[1]}>"), text)
    if isinstance(value, dict):
        return {key: render(item) for key, item in value.items()}
    return value


def permissions(template: dict, role: str) -> set[tuple[str, str]]:
    """Every (action, resource) pair a role's inline policies allow (explicit denials aside)."""
    pairs = set()
    for policy in template["Resources"][role]["Properties"]["Policies"]:
        for statement in _statements(policy["PolicyDocument"]["Statement"]):
            if statement["Effect"] == "Deny":
                continue
            assert statement["Effect"] == "Allow"
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = render(statement["Resource"])
            resources = resources if isinstance(resources, list) else [resources]
            pairs |= {(action, resource) for action in actions for resource in resources}
    return pairs


def test_template_passes_cfn_lint():
    lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run([str(lint), str(TEMPLATE)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr


def test_roles_are_least_privilege():
    template = load_template()
    assert permissions(template, "TaskRole") == {
        ("s3:ListBucket", UPLOAD), ("s3:ListBucket", OUTPUT), ("s3:ListBucket", RESULTS),
        ("s3:GetObject", f"{UPLOAD}/*"), ("s3:GetObjectVersion", f"{UPLOAD}/*"),
        ("s3:PutObject", f"{UPLOAD}/quarantine/*"),
        # Rejection and failure records: in the output bucket, where uploaders cannot write.
        *{(action, f"{OUTPUT}/records/*") for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")},
        ("s3:GetObject", f"{OUTPUT}/assets/*"), ("s3:PutObject", f"{OUTPUT}/assets/*"),
        ("s3:AbortMultipartUpload", f"{OUTPUT}/assets/*"), ("s3:DeleteObject", f"{OUTPUT}/assets/*"),
        ("s3:GetObject", f"{RESULTS}/*"), ("s3:PutObject", f"{RESULTS}/*"), ("s3:DeleteObject", f"{RESULTS}/*"),
        ("s3:AbortMultipartUpload", f"{RESULTS}/*"),
        # Each asset's state in the records (the API reads them).
        ("dynamodb:GetItem", "<RecordsTable.Arn>"), ("dynamodb:UpdateItem", "<RecordsTable.Arn>"),
        ("dynamodb:DeleteItem", "<RecordsTable.Arn>"),
        # The webhook events of those states: stored, fanned out to the endpoints (listed).
        *{(f"dynamodb:{action}", resource) for action in ("PutItem", "Query")
          for resource in ("<RecordsTable.Arn>", "<RecordsTable.Arn>/index/*")},
        ("sqs:GetQueueUrl", "<WebhookQueue.Arn>"), ("sqs:SendMessage", "<WebhookQueue.Arn>"),
    }
    # ... and never the endpoints' signing secrets.
    (deny,) = [s for p in template["Resources"]["TaskRole"]["Properties"]["Policies"]
               for s in p["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert deny["Action"] == "dynamodb:*" and render(deny["Resource"]) == ["<RecordsTable.Arn>", "<RecordsTable.Arn>/index/*"]
    assert deny["Condition"] == {"ForAnyValue:StringLike": {"dynamodb:LeadingKeys": ["webhook-secret#*"]}}
    prefect_secrets = {("secretsmanager:GetSecretValue", "<PrefectApiKeySecretArn>"),
                       ("secretsmanager:GetSecretValue", "<PrefectAuthStringSecretArn>")}
    # The API presigns into uploads/ only, reads and deletes only assets and their rejection
    # records (sources only with DeleteSourceOnAssetDelete), its records and its tokens.
    assert permissions(template, "ApiRole") == {
        ("logs:CreateLogStream", "<ApiLogGroup.Arn>"), ("logs:PutLogEvents", "<ApiLogGroup.Arn>"),
        ("s3:ListBucket", OUTPUT), ("s3:ListBucket", UPLOAD),
        *{(action, f"{UPLOAD}/uploads/*") for action in
          ("s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts")},
        *{(action, resource) for action in ("s3:GetObject", "s3:DeleteObject")
          for resource in (f"{OUTPUT}/assets/*", f"{OUTPUT}/records/*")},
        ("s3:DeleteObject", f"{UPLOAD}/quarantine/*"),
        ("s3:DeleteObject", f"{UPLOAD}/*"),
        *{(f"dynamodb:{action}", resource) for action in ("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query")
          for resource in ("<RecordsTable.Arn>", "<RecordsTable.Arn>/index/*")},
        ("secretsmanager:GetSecretValue", "<ApiTokensSecret>"), *prefect_secrets,
        # Private playback: the signing key, and the CloudFront key-value store it keeps.
        ("secretsmanager:GetSecretValue", "<PlaybackSigningKeySecret>"),
        *{(f"cloudfront-keyvaluestore:{action}", "<PlaybackKeyValueStore.Arn>")
          for action in ("DescribeKeyValueStore", "GetKey", "PutKey", "DeleteKey")},
        ("sqs:GetQueueUrl", "<WebhookQueue.Arn>"), ("sqs:SendMessage", "<WebhookQueue.Arn>"),
    }
    # The webhook dispatcher: its queue, the deliveries' items, its logs.
    assert permissions(template, "WebhookFunctionRole") == {
        *{(action, "<WebhookQueue.Arn>") for action in
          ("sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:DeleteMessage",
           "sqs:ChangeMessageVisibility")},
        ("dynamodb:GetItem", "<RecordsTable.Arn>"), ("dynamodb:UpdateItem", "<RecordsTable.Arn>"),
        ("logs:CreateLogStream", "<WebhookLogGroup.Arn>"), ("logs:PutLogEvents", "<WebhookLogGroup.Arn>"),
    }
    (tokens,) = [s for p in template["Resources"]["ApiRole"]["Properties"]["Policies"]
                 for s in p["PolicyDocument"]["Statement"] if s.get("Sid") == "ReadTokens"]
    assert render(tokens["Resource"]["Fn::If"][2]) == \
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:<ApiTokensSecretName>-*"
    assert permissions(template, "BridgeFunctionRole") == {
        *{(action, "<UploadQueue.Arn>") for action in
          ("sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility")},
        ("logs:CreateLogStream", "<BridgeLogGroup.Arn>"), ("logs:PutLogEvents", "<BridgeLogGroup.Arn>"),
        *prefect_secrets,
    }
    assert permissions(template, "BridgeRole") == {
        (action, "<UploadQueue.Arn>") for action in
        ("sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:DeleteMessage",
         "sqs:ChangeMessageVisibility")
    }
    assert permissions(template, "ExecutionRole") == {
        ("ecr:GetAuthorizationToken", "*"),
        ("ecr:BatchCheckLayerAvailability", "<ImageRepository.Arn>"), ("ecr:BatchGetImage", "<ImageRepository.Arn>"),
        ("ecr:GetDownloadUrlForLayer", "<ImageRepository.Arn>"),
        ("logs:CreateLogStream", "<LogGroup.Arn>"), ("logs:PutLogEvents", "<LogGroup.Arn>"),
        # Only when given: the secrets holding the Prefect API key / auth string.
        ("secretsmanager:GetSecretValue", "<PrefectApiKeySecretArn>"),
        ("secretsmanager:GetSecretValue", "<PrefectAuthStringSecretArn>"),
    }
    # The worker passes exactly the two transcode roles, to ECS only.
    (pass_role,) = [s for p in template["Resources"]["WorkerRole"]["Properties"]["Policies"]
                    for s in p["PolicyDocument"]["Statement"] if s["Action"] == "iam:PassRole"]
    assert render(pass_role["Resource"]) == ["<TaskRole.Arn>", "<ExecutionRole.Arn>"]
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}


def test_buckets_and_queue_are_locked_down():
    template = load_template()
    resources = template["Resources"]
    for name in ("UploadBucket", "OutputBucket", "ResultsBucket"):
        properties = resources[name]["Properties"]
        assert all(properties["PublicAccessBlockConfiguration"].values()), name
        assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"], name
    upload = resources["UploadBucket"]
    (rule,) = upload["Properties"]["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled" and render(rule["ExpirationInDays"]) == "<UploadRetentionDays>"
    (notification,) = upload["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert notification["Event"] == "s3:ObjectCreated:*"
    assert render(notification["Queue"]) == "<UploadQueue.Arn>"
    (cors,) = resources["OutputBucket"]["Properties"]["CorsConfiguration"]["CorsRules"]
    assert cors["AllowedMethods"] == ["GET", "HEAD"]
    # Browsers PUT direct uploads through presigned URLs and read each part's ETag.
    (cors,) = upload["Properties"]["CorsConfiguration"]["CorsRules"]
    assert cors["AllowedMethods"] == ["PUT"] and cors["ExposedHeaders"] == ["ETag"]

    # Only this stack's upload bucket may send to the queue; the bucket waits for the policy
    # (its notification is validated against it) and the policy names the bucket without
    # referencing it, which would be circular.
    assert upload["DependsOn"] == "UploadQueuePolicy"
    (statement,) = resources["UploadQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert render(statement["Resource"]) == "<UploadQueue.Arn>"
    assert render(statement["Condition"]["ArnEquals"]["aws:SourceArn"]) == UPLOAD
    assert f"arn:aws:s3:::{render(upload['Properties']['BucketName'])}" == UPLOAD
    redrive = resources["UploadQueue"]["Properties"]["RedrivePolicy"]
    assert render(redrive["deadLetterTargetArn"]) == "<UploadDeadLetterQueue.Arn>"

    # Every bucket refuses plain HTTP.
    for bucket, policy in (("OutputBucket", "OutputBucketPolicy"), ("UploadBucket", "UploadBucketPolicy"),
                           ("ResultsBucket", "ResultsBucketPolicy")):
        statements = _statements(resources[policy]["Properties"]["PolicyDocument"]["Statement"])
        (tls,) = [st for st in statements if st.get("Sid") == "TlsOnly"]
        assert tls["Effect"] == "Deny" and tls["Principal"] == "*" and tls["Action"] == "s3:*", policy
        assert render(tls["Resource"]) == [f"<{bucket}.Arn>", f"<{bucket}.Arn>/*"], policy
        assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, policy
    # Nobody but PixelFlow's roles writes the records (output bucket) and the kept copies of
    # rejected sources (upload bucket): uploaders cannot forge a rejection.
    for policy, resource, writers in (
            ("OutputBucketPolicy", f"{OUTPUT}/records/*", ["<TaskRole.Arn>", "<ReconcileFunctionRole.Arn>"]),
            ("UploadBucketPolicy", "<UploadBucket.Arn>/quarantine/*", "<TaskRole.Arn>")):
        (deny,) = [st for st in _statements(resources[policy]["Properties"]["PolicyDocument"]["Statement"])
                   if st.get("Effect") == "Deny" and st.get("Action") == "s3:PutObject"]
        assert deny["Principal"] == "*" and render(deny["Resource"]) == resource, policy
        assert render(deny["Condition"]) == {"ArnNotEquals": {"aws:PrincipalArn": writers}}, policy
    # Playback: CloudFront may read the published media types only (not manifest.json, which names
    # the source), for this distribution only.
    (read,) = [st for st in _statements(resources["OutputBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"])
               if st.get("Effect") == "Allow"]
    assert read["Principal"] == {"Service": "cloudfront.amazonaws.com"} and read["Action"] == "s3:GetObject"
    assert render(read["Resource"]) == [f"{OUTPUT}/assets/*.{ext}" for ext in ("m3u8", "m4s", "mp4", "jpg", "vtt", "m4a")]
    assert render(read["Condition"]["StringEquals"]["AWS:SourceArn"]).endswith(":distribution/<AssetsDistribution>")
    # Tasks reach out over HTTPS only, and nothing reaches in.
    group = resources["TaskSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in group["SecurityGroupEgress"]] == [("tcp", 443, 443)]
    # The operator hears of the dead-letter queue, stuck uploads and failed runs.
    alarms = {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert {(a["Namespace"], a["MetricName"]) for a in alarms.values()} == {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"), ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
        ("PixelFlow", "FailedRuns"),
        # the self-hosted Prefect server's load balancer: the server's 5xx and its own (no server)
        ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"), ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count")}
    assert all(render(a["AlarmActions"]) == ["<AlertsTopic>"] for a in alarms.values())
    assert render(resources["FailedRunsMetric"]["Properties"]["LogGroupName"]) == "<LogGroup>"

    (bridge,) = resources["BridgeTaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert bridge["Command"] == ["pixelflow", "bridge"]
    # The bridge runs as an ECS service or as a function the queue triggers, never both.
    assert resources["BridgeService"]["Condition"] == "CreateBridgeService"
    assert resources["BridgeEventSource"]["Condition"] == resources["BridgeFunction"]["Condition"] == "BridgeOnLambda"
    assert resources["BridgeEventSource"]["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]

    # Webhooks: a FIFO queue (one message group per endpoint) with a dead-letter queue, drained
    # by the webhook function, which reports retries as batch item failures.
    queue = resources["WebhookQueue"]["Properties"]
    assert queue["FifoQueue"] is True and resources["WebhookDeadLetterQueue"]["Properties"]["FifoQueue"] is True
    assert render(queue["RedrivePolicy"]["deadLetterTargetArn"]) == "<WebhookDeadLetterQueue.Arn>"
    function = resources["WebhookFunction"]["Properties"]
    assert function["Handler"] == "pixelflow.ops.lambda_handlers.webhooks_handler"
    assert function["Timeout"] < queue["VisibilityTimeout"]
    mapping = resources["WebhookEventSource"]["Properties"]
    assert render(mapping["EventSourceArn"]) == "<WebhookQueue.Arn>"
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_the_reconciler_runs_on_a_schedule_with_least_privilege():
    """EventBridge Scheduler invokes the reconciler function (one round: lost events, retries of
    failed uploads, records repair); its role may do what a round does and nothing else."""
    template = load_template()
    resources = template["Resources"]
    schedule = resources["ReconcileEveryFewMinutes"]
    assert schedule["Type"] == "AWS::Scheduler::Schedule"
    target = schedule["Properties"]["Target"]
    assert render(target["Arn"]) == "<ReconcileFunction.Arn>"
    assert render(target["RoleArn"]) == "<ReconcileScheduleRole.Arn>"
    assert json.loads(render(target["Input"])) == {"deployment": "<ReconcileDeployment>", "older_than": 300,
                                                   "within": 86400}
    assert render(schedule["Properties"]["ScheduleExpression"]) == "<ReconcileSchedule>"
    assert template["Parameters"]["ReconcileSchedule"]["Default"] == "rate(5 minutes)"
    function = resources["ReconcileFunction"]["Properties"]
    assert function["Handler"] == "pixelflow.ops.lambda_handlers.reconcile_handler"
    assert {resources[name]["Condition"] for name in ("ReconcileEveryFewMinutes", "ReconcileFunction",
                                                      "ReconcileFunctionRole", "ReconcileScheduleRole")} == {
        "CreateReconciler"}
    assert permissions(template, "ReconcileScheduleRole") == {("lambda:InvokeFunction", "<ReconcileFunction.Arn>")}
    (trust,) = resources["ReconcileScheduleRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert render(trust["Condition"]) == {"StringEquals": {"aws:SourceAccount": "123456789012"}}
    records = f"{OUTPUT}/records/*"
    assert permissions(template, "ReconcileFunctionRole") == {
        ("logs:CreateLogStream", "<ReconcileLogGroup.Arn>"), ("logs:PutLogEvents", "<ReconcileLogGroup.Arn>"),
        *{(action, bucket) for action in ("s3:ListBucket", "s3:GetBucketVersioning") for bucket in (OUTPUT, UPLOAD)},
        ("s3:GetObject", f"{OUTPUT}/assets/*"), ("s3:GetObject", records),
        # The count of a failed upload's retries, and nothing else of the records.
        ("s3:PutObject", f"{OUTPUT}/records/*/retries.json"),
        # A deleted asset's objects that reappeared are removed again.
        ("s3:DeleteObject", f"{OUTPUT}/assets/*"), ("s3:DeleteObject", records),
        ("s3:DeleteObject", f"{UPLOAD}/quarantine/*"),
        *{(f"dynamodb:{action}", resource) for action in ("GetItem", "UpdateItem", "DeleteItem", "Query")
          for resource in ("<RecordsTable.Arn>", "<RecordsTable.Arn>/index/*")},
        ("secretsmanager:GetSecretValue", "<PrefectApiKeySecretArn>"),
        ("secretsmanager:GetSecretValue", "<PrefectAuthStringSecretArn>"),
    }


def test_records_table_is_the_one_the_code_creates():
    from pixelflow.records import table_definition

    table = load_template()["Resources"]["RecordsTable"]["Properties"]
    expected = table_definition()
    assert table["BillingMode"] == expected["BillingMode"] == "PAY_PER_REQUEST"
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(expected["AttributeDefinitions"], key=str)
    assert table["KeySchema"] == expected["KeySchema"]
    assert table["GlobalSecondaryIndexes"] == expected["GlobalSecondaryIndexes"]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_stack_deploys_and_carries_an_upload(moto_server, prefect_server, media_dir, monkeypatch):
    import boto3

    suffix = uuid.uuid4().hex[:8]
    stack = f"pixelflow-{suffix}"
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    cloudformation.create_stack(
        StackName=stack, TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_IAM"],
        Parameters=[
            {"ParameterKey": "NamePrefix", "ParameterValue": f"pf{suffix}"},
            {"ParameterKey": "LogGroupName", "ParameterValue": f"/pixelflow/{suffix}"},
            # moto has no CloudFront: players would use presigned URLs.
            {"ParameterKey": "EnableCdn", "ParameterValue": "false"},
            {"ParameterKey": "ImageUri", "ParameterValue": "123456789012.dkr.ecr.us-east-1.amazonaws.com/pf/transcoder:1"},
            {"ParameterKey": "PrefectApiUrl", "ParameterValue": prefect_server},
        ],
    )
    (described,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
    upload, output = outputs["UploadBucketName"], outputs["OutputBucketName"]
    assert upload == f"pf{suffix}-uploads-123456789012-us-east-1"

    s3 = boto3.client("s3", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    ecs = boto3.client("ecs", region_name="us-east-1")
    queue_url = sqs.get_queue_url(QueueName=outputs["UploadQueueName"])["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    dlq_arn = sqs.get_queue_attributes(
        QueueUrl=sqs.get_queue_url(QueueName=outputs["DeadLetterQueueName"])["QueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert json.loads(attributes["RedrivePolicy"]) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}
    assert s3.get_bucket_encryption(Bucket=upload)["ServerSideEncryptionConfiguration"]["Rules"]
    services = ecs.describe_services(cluster=outputs["ClusterName"], services=["bridge", "prefect-worker"])["services"]
    assert sorted(s["serviceName"] for s in services) == ["bridge", "prefect-worker"]
    bridge = ecs.describe_task_definition(taskDefinition=f"{stack}-bridge")["taskDefinition"]["containerDefinitions"][0]
    bridge_env = {item["name"]: item["value"] for item in bridge["environment"]}
    assert bridge["command"] == ["pixelflow", "bridge"]
    assert bridge_env["PIXELFLOW_QUEUE_NAME"] == outputs["UploadQueueName"]
    assert bridge_env["PREFECT_API_URL"] == prefect_server

    # moto's CloudFormation creates buckets with their encryption only; the template's
    # notification is applied through the S3 API, as CloudFormation does on AWS.
    (notification,) = load_template()["Resources"]["UploadBucket"]["Properties"]["NotificationConfiguration"][
        "QueueConfigurations"]
    s3.put_bucket_notification_configuration(Bucket=upload, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": attributes["QueueArn"], "Events": [notification["Event"]]}]})

    clip = make_clip(media_dir / "stack-clip.mp4", seconds=2, size="640x360")
    key = "incoming/stack clip.mp4"
    s3.upload_file(str(clip), upload, key)
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=5).get("Messages", [])
    records = [r for m in messages for r in json.loads(m["Body"]).get("Records", [])]
    assert [(r["eventName"], r["s3"]["bucket"]["name"], unquote_plus(r["s3"]["object"]["key"])) for r in records] == [
        ("ObjectCreated:Put", upload, key)]

    # The flow, in-process, on that notification's object: the asset lands in the stack's
    # production bucket.
    from flows.transcode import transcode

    monkeypatch.setenv("PIXELFLOW_UPLOAD_BUCKET", upload)
    monkeypatch.setenv("PIXELFLOW_OUTPUT_BUCKET", output)
    monkeypatch.setenv("PIXELFLOW_LADDER", "360")
    obj = records[0]["s3"]["object"]
    manifest = transcode(bucket=upload, key=unquote_plus(obj["key"]), etag=obj["eTag"])
    assert manifest["status"] == "ready"
    stored = json.loads(s3.get_object(Bucket=output, Key=f"assets/{manifest['asset_id']}/manifest.json")["Body"].read())
    assert stored["asset_id"] == manifest["asset_id"]
    assert [r["name"] for r in stored["renditions"]] == ["360p"]


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_serverless_api_and_bridge_deploy_and_the_api_works_on_what_they_created(moto_server, monkeypatch):
    """With the Lambda package: the records table, the API function (its environment is enough
    for the API to serve uploads) and the bridge as a queue-triggered function, no ECS service."""
    import io
    import zipfile

    import boto3

    from pixelflow.ops import lambda_handlers
    from tests.test_api_lambda import _url_event

    suffix = uuid.uuid4().hex[:8]
    stack = f"pixelflow-sl-{suffix}"
    s3 = boto3.client("s3", region_name="us-east-1")
    code_bucket = f"code-{suffix}"
    s3.create_bucket(Bucket=code_bucket)
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("pixelflow/__init__.py", "")
    s3.put_object(Bucket=code_bucket, Key="pixelflow-lambda.zip", Body=package.getvalue())
    token = uuid.uuid4().hex
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    secret_name = f"pixelflow/{suffix}/api-tokens"
    secrets.create_secret(Name=secret_name, SecretString=token)
    playback_key_name = f"pixelflow/{suffix}/playback-key"  # moto's CloudFormation creates no secrets
    playback_key = uuid.uuid4().hex * 2
    secrets.create_secret(Name=playback_key_name, SecretString=playback_key)

    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    cloudformation.create_stack(
        StackName=stack, TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in {
            "NamePrefix": f"pf{suffix}", "LogGroupName": f"/pixelflow/{suffix}", "EnableCdn": "false",
            "PrefectApiUrl": "http://127.0.0.1:4200/api", "LambdaCodeBucket": code_bucket,
            "LambdaCodeKey": "pixelflow-lambda.zip", "ApiTokensSecretName": secret_name,
            "PlaybackSigningKeySecretName": playback_key_name,
            # moto has no Function URLs: the function is tested through its handler below.
            "EnableApiUrl": "false", "BridgeRuntime": "lambda"}.items()])
    (described,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
    assert "ApiUrl" not in outputs and outputs["ApiTokensSecret"] == secret_name

    table = boto3.client("dynamodb", region_name="us-east-1").describe_table(TableName=outputs["RecordsTableName"])
    assert sorted(i["IndexName"] for i in table["Table"]["GlobalSecondaryIndexes"]) == [
        "assets_by_created", "assets_by_status"]
    lambdas = boto3.client("lambda", region_name="us-east-1")
    api = lambdas.get_function(FunctionName=f"{stack}-api")["Configuration"]
    assert api["Handler"] == "pixelflow.ops.lambda_handlers.api_handler" and api["Runtime"] == "python3.12"
    env = api["Environment"]["Variables"]
    assert env["PIXELFLOW_RECORDS_TABLE"] == outputs["RecordsTableName"]
    assert env["PIXELFLOW_UPLOAD_BUCKET"] == outputs["UploadBucketName"]
    assert env["PIXELFLOW_API_TOKENS_SECRET_ID"] == secret_name
    assert env["PIXELFLOW_PLAYBACK_SIGNING_KEY_SECRET_ID"] == playback_key_name
    assert env["PIXELFLOW_DEFAULT_PLAYBACK_POLICY"] == "public" and "PIXELFLOW_PLAYBACK_KVS_ARN" not in env
    bridge = lambdas.get_function(FunctionName=f"{stack}-bridge")["Configuration"]
    assert bridge["Handler"] == "pixelflow.ops.lambda_handlers.bridge_handler"
    queue_arn = boto3.client("sqs", region_name="us-east-1").get_queue_attributes(
        QueueUrl=outputs["UploadQueueUrl"], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    (mapping,) = lambdas.list_event_source_mappings(FunctionName=f"{stack}-bridge")["EventSourceMappings"]
    assert mapping["EventSourceArn"] == queue_arn and mapping["BatchSize"] == 10
    ecs = boto3.client("ecs", region_name="us-east-1")
    assert ecs.list_services(cluster=outputs["ClusterName"])["serviceArns"] == []
    hooks = lambdas.get_function(FunctionName=f"{stack}-webhooks")["Configuration"]
    assert hooks["Handler"] == "pixelflow.ops.lambda_handlers.webhooks_handler"
    assert hooks["Environment"]["Variables"]["PIXELFLOW_WEBHOOK_QUEUE_NAME"] == outputs["WebhookQueueName"]
    sqs = boto3.client("sqs", region_name="us-east-1")
    hooks_queue = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName=outputs["WebhookQueueName"])["QueueUrl"],
                                           AttributeNames=["All"])["Attributes"]
    assert hooks_queue["FifoQueue"] == "true" and json.loads(hooks_queue["RedrivePolicy"])["maxReceiveCount"] == 100
    (hooks_mapping,) = lambdas.list_event_source_mappings(FunctionName=f"{stack}-webhooks")["EventSourceMappings"]
    assert hooks_mapping["EventSourceArn"] == hooks_queue["QueueArn"]

    # The reconciler function, with what a round needs: one round on the stack's (empty) buckets
    # and records starts nothing and repairs nothing. (moto's CloudFormation has no EventBridge
    # Scheduler: the schedule is checked in the template, test_the_reconciler_runs_on_a_schedule...)
    reconciler = lambdas.get_function(FunctionName=f"{stack}-reconcile")["Configuration"]
    assert reconciler["Handler"] == "pixelflow.ops.lambda_handlers.reconcile_handler"
    reconcile_env = reconciler["Environment"]["Variables"]
    assert reconcile_env["PIXELFLOW_OUTPUT_BUCKET"] == outputs["OutputBucketName"]
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.events_helpers import closed_port

    # Nothing is due, so Prefect is never asked (its URL is a closed port).
    with monkeypatch.context() as patch, temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{closed_port()}/api"}):
        for name, value in reconcile_env.items():
            if name.startswith("PIXELFLOW_"):
                patch.setenv(name, str(value))
        assert lambda_handlers.reconcile_handler({"deployment": "ecs"}) == {
            "started": [], "retried": [], "given_up": [], "repaired": 0}

    # The API function's environment is all the API needs: it answers with the stack's records
    # and presigns into the stack's upload bucket.
    for name, value in env.items():
        if name.startswith("PIXELFLOW_"):
            monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("PIXELFLOW_API_TOKENS", raising=False)
    monkeypatch.setattr(lambda_handlers, "_api", None)
    created = lambda_handlers.api_handler(dict(_url_event("POST", "/v1/uploads", {
        "authorization": f"Bearer {token}", "content-type": "application/json"}),
        body=json.dumps({"filename": "stack.mp4", "size": 100})), None)
    assert created["statusCode"] == 201, created["body"]
    assert f"/{outputs['UploadBucketName']}/uploads/" in json.loads(created["body"])["data"]["url"]
    assert lambda_handlers._api.app.state.playback.key == playback_key.encode()  # read from its secret
    listed = lambda_handlers.api_handler(_url_event("GET", "/v1/assets", {"authorization": f"Bearer {token}"}), None)
    assert listed["statusCode"] == 200


# --- the self-hosted Prefect server (PrefectServer=self-hosted) -----------------------------------
def test_self_hosted_prefect_server_is_pinned_private_and_least_privilege():
    """The server image is pinned to PixelFlow's Prefect version (a moving tag is refused), the
    database keeps backups, is encrypted and cannot be deleted by accident, the server's role
    reads its two secrets only, and the auth string is never in plain text in the template."""
    template = load_template()
    resources, parameters = template["Resources"], template["Parameters"]
    locked = (ROOT / "uv.lock").read_text()
    prefect_version = re.search(r'name = "prefect"\nversion = "([^"]+)"', locked)[1]
    image = parameters["PrefectServerImage"]
    assert image["Default"].startswith(f"prefecthq/prefect:{prefect_version}-")
    pattern = re.compile(image["AllowedPattern"])
    assert pattern.match(image["Default"])
    assert pattern.match(f"prefecthq/prefect:{prefect_version}-python3.12@sha256:{'a' * 64}")
    for moving in ("prefecthq/prefect", "prefecthq/prefect:latest", "prefecthq/prefect:3-python3.12"):
        assert not pattern.match(moving), moving

    database = resources["PrefectDatabase"]
    props = database["Properties"]
    assert props["StorageEncrypted"] is True and props["DeletionProtection"] is True
    assert props["PubliclyAccessible"] is False and render(props["BackupRetentionPeriod"]) == "<PrefectDatabaseBackupDays>"
    assert database["DeletionPolicy"] == database["UpdateReplacePolicy"] == "Snapshot"
    assert "resolve:secretsmanager" in render(props["MasterUserPassword"])
    # The database's subnets have no route table of their own: only the VPC's local routes.
    routed = {render(r["Properties"]["SubnetId"]) for r in resources.values()
              if r["Type"] == "AWS::EC2::SubnetRouteTableAssociation"}
    assert not routed & {"<DatabaseSubnetA>", "<DatabaseSubnetB>"}
    assert permissions(template, "PrefectServerExecutionRole") == {
        ("logs:CreateLogStream", "<LogGroup.Arn>"), ("logs:PutLogEvents", "<LogGroup.Arn>"),
        ("secretsmanager:GetSecretValue", "<PrefectDatabaseSecret>"),
        ("secretsmanager:GetSecretValue", "<PrefectAuthStringSecretArn>"),
    }
    text = TEMPLATE.read_text()
    assert not re.search(r"Name: PREFECT_(SERVER|API)_AUTH_STRING, Value:", text)
    migrate, server = resources["PrefectServerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    # The server checks the auth string the worker and the bridge send: one secret for all.
    (server_auth,) = [s for s in server["Secrets"] if s["Name"] == "PREFECT_SERVER_API_AUTH_STRING"]
    for name in ("WorkerTaskDefinition", "BridgeTaskDefinition"):
        (container,) = resources[name]["Properties"]["ContainerDefinitions"]
        (client_auth,) = container["Secrets"]["Fn::If"][2]["Fn::If"][1]
        assert client_auth == {"Name": "PREFECT_API_AUTH_STRING", "ValueFrom": server_auth["ValueFrom"]}, name
    assert migrate["Command"] == ["prefect", "server", "database", "upgrade", "-y"] and migrate["Essential"] is False
    assert server["DependsOn"] == [{"ContainerName": "migrate", "Condition": "SUCCESS"}]
    (balanced,) = resources["PrefectServerService"]["Properties"]["LoadBalancers"]
    assert render(balanced) == {"ContainerName": "server", "ContainerPort": 4200, "TargetGroupArn": "<PrefectTargetGroup>"}
    deployment = resources["PrefectServerService"]["Properties"]["DeploymentConfiguration"]
    assert deployment["MaximumPercent"] == 100, "two server tasks would migrate the database at once"
    # The asset records can be restored to any second of the last 35 days.
    assert resources["RecordsTable"]["Properties"]["PointInTimeRecoverySpecification"] == {
        "PointInTimeRecoveryEnabled": True}
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"
              and r["Properties"]["Namespace"] == "AWS/ApplicationELB"]
    assert len(alarms) == 2 and all(render(a["Dimensions"]) == [
        {"Name": "LoadBalancer", "Value": "<PrefectLoadBalancer.LoadBalancerFullName>"}] for a in alarms)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_self_hosted_prefect_server_deploys_and_everything_points_at_it(moto_server):
    """With PrefectServer=self-hosted and no PrefectApiUrl: the server's ECS service behind the
    HTTPS load balancer, its RDS PostgreSQL, the security groups chaining load balancer ->
    server -> database, and the worker and bridge pointed at
    the server with its auth string from Secrets Manager. (The 5xx alarms, the secrets and the
    records table's point-in-time recovery: moto's CloudFormation skips them; the template test
    checks them.)"""
    import boto3

    suffix = uuid.uuid4().hex[:8]
    stack = f"pixelflow-sh-{suffix}"
    domain = f"prefect-{suffix}.example.com"
    certificate = boto3.client("acm", region_name="us-east-1").request_certificate(DomainName=domain)["CertificateArn"]
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    cloudformation.create_stack(
        StackName=stack, TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in {
            "NamePrefix": f"pf{suffix}", "LogGroupName": f"/pixelflow/{suffix}", "EnableCdn": "false",
            "ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/pf/transcoder:1",
            "PrefectServer": "self-hosted", "PrefectServerDomainName": domain,
            "PrefectServerCertificateArn": certificate}.items()])
    (described,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}
    api_url = f"https://{domain}/api"
    assert outputs["PrefectApiUrl"] == api_url
    # moto's CloudFormation creates no Secrets Manager secrets and no alarms (it skips those
    # types): the references to them are checked here, the resources themselves in the template
    # (test_self_hosted_prefect_server_is_pinned_private_and_least_privilege and
    # test_buckets_and_queue_are_locked_down); moto also leaves out the outputs naming them.

    ecs = boto3.client("ecs", region_name="us-east-1")
    services = {s["serviceName"]: s for s in ecs.describe_services(
        cluster=outputs["ClusterName"], services=["prefect-server", "bridge", "prefect-worker"])["services"]}
    assert sorted(services) == ["bridge", "prefect-server", "prefect-worker"]
    definition = ecs.describe_task_definition(taskDefinition=f"{stack}-prefect-server")["taskDefinition"]
    containers = {c["name"]: c for c in definition["containerDefinitions"]}
    server_env = {e["name"]: e["value"] for e in containers["server"]["environment"]}
    assert server_env["PREFECT_SERVER_DATABASE_MIGRATE_ON_START"] == "false"
    assert server_env["PREFECT_SERVER_DATABASE_DRIVER"] == "postgresql+asyncpg"
    # Secrets come from Secrets Manager only (which secret: the template test; moto leaves the
    # references empty): never in the environment.
    assert {s["name"] for s in containers["server"]["secrets"]} == {
        "PREFECT_SERVER_DATABASE_PASSWORD", "PREFECT_SERVER_API_AUTH_STRING"}
    assert containers["migrate"]["command"] == ["prefect", "server", "database", "upgrade", "-y"]
    for family in ("worker", "bridge"):
        (container,) = ecs.describe_task_definition(taskDefinition=f"{stack}-{family}")["taskDefinition"][
            "containerDefinitions"]
        env = {e["name"]: e["value"] for e in container["environment"]}
        assert env["PREFECT_API_URL"] == api_url, family
        assert [s["name"] for s in container["secrets"]] == ["PREFECT_API_AUTH_STRING"], family
        containers[family] = container
    assert not [e["name"] for c in containers.values() for e in c["environment"]
                if "PASSWORD" in e["name"] or "AUTH_STRING" in e["name"]]

    rds = boto3.client("rds", region_name="us-east-1")
    (instance,) = [i for i in rds.describe_db_instances()["DBInstances"]
                   if i["Endpoint"]["Address"] == outputs["PrefectDatabaseEndpoint"]]
    assert instance["Engine"] == "postgres" and instance["StorageEncrypted"] is True
    assert instance["BackupRetentionPeriod"] == 7 and instance["PubliclyAccessible"] is False
    ec2 = boto3.client("ec2", region_name="us-east-1")
    groups = {g["GroupId"]: g for g in ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [outputs["VpcId"]]}])["SecurityGroups"]}
    # The database's subnets are not the public ones and have no route to the internet gateway.
    database_subnets = {s["SubnetIdentifier"] for s in instance["DBSubnetGroup"]["Subnets"]}
    assert len(database_subnets) == 2 and not database_subnets & {outputs["SubnetA"], outputs["SubnetB"]}
    for table in ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [outputs["VpcId"]]}])["RouteTables"]:
        if any(r.get("GatewayId", "").startswith("igw-") for r in table["Routes"]):
            assert not {a.get("SubnetId") for a in table["Associations"]} & database_subnets
    elbv2 = boto3.client("elbv2", region_name="us-east-1")
    (balancer,) = [lb for lb in elbv2.describe_load_balancers()["LoadBalancers"]
                   if lb["DNSName"] == outputs["PrefectLoadBalancerDnsName"]]
    assert balancer["Scheme"] == "internet-facing"
    (lb_group,) = balancer["SecurityGroups"]
    (listener,) = elbv2.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    assert (listener["Protocol"], listener["Port"]) == ("HTTPS", 443)
    assert [c["CertificateArn"] for c in listener["Certificates"]] == [certificate]
    (target_group,) = elbv2.describe_target_groups(LoadBalancerArn=balancer["LoadBalancerArn"])["TargetGroups"]
    assert (target_group["Port"], target_group["HealthCheckPath"]) == (4200, "/api/health")
    (server_group,) = [g for g, group in groups.items() if group.get("Description", "").startswith("Prefect server task")]
    # (moto's CloudFormation gives the instance a default group, not its VPCSecurityGroups)
    (database_group,) = [g for g, group in groups.items() if group.get("Description", "").startswith("Prefect database")]

    def ingress(group_id: str) -> list[tuple]:
        return sorted((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"),
                       tuple(sorted(r["CidrIp"] for r in p.get("IpRanges", []))),
                       tuple(sorted(u["GroupId"] for u in p.get("UserIdGroupPairs", []))))
                      for p in groups[group_id]["IpPermissions"])
    assert ingress(lb_group) == [("tcp", 443, 443, ("0.0.0.0/0",), ())]
    assert ingress(server_group) == [("tcp", 4200, 4200, (), (lb_group,))]
    assert ingress(database_group) == [("tcp", 5432, 5432, (), (server_group,))]
