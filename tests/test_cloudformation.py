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
    """Every (action, resource) pair a role's inline policies allow."""
    pairs = set()
    for policy in template["Resources"][role]["Properties"]["Policies"]:
        for statement in _statements(policy["PolicyDocument"]["Statement"]):
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
    }
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
    assert render(read["Resource"]) == [f"{OUTPUT}/assets/*.{ext}" for ext in ("m3u8", "m4s", "mp4", "jpg")]
    assert render(read["Condition"]["StringEquals"]["AWS:SourceArn"]).endswith(":distribution/<AssetsDistribution>")
    # Tasks reach out over HTTPS only, and nothing reaches in.
    group = resources["TaskSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in group["SecurityGroupEgress"]] == [("tcp", 443, 443)]
    # The operator hears of the dead-letter queue, stuck uploads and failed runs.
    alarms = {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert {(a["Namespace"], a["MetricName"]) for a in alarms.values()} == {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"), ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
        ("PixelFlow", "FailedRuns")}
    assert all(render(a["AlarmActions"]) == ["<AlertsTopic>"] for a in alarms.values())
    assert render(resources["FailedRunsMetric"]["Properties"]["LogGroupName"]) == "<LogGroup>"

    (bridge,) = resources["BridgeTaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert bridge["Command"] == ["pixelflow", "bridge"]
    # The bridge runs as an ECS service or as a function the queue triggers, never both.
    assert resources["BridgeService"]["Condition"] == "CreateBridgeService"
    assert resources["BridgeEventSource"]["Condition"] == resources["BridgeFunction"]["Condition"] == "BridgeOnLambda"
    assert resources["BridgeEventSource"]["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


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

    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    cloudformation.create_stack(
        StackName=stack, TemplateBody=TEMPLATE.read_text(), Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in {
            "NamePrefix": f"pf{suffix}", "LogGroupName": f"/pixelflow/{suffix}", "EnableCdn": "false",
            "PrefectApiUrl": "http://127.0.0.1:4200/api", "LambdaCodeBucket": code_bucket,
            "LambdaCodeKey": "pixelflow-lambda.zip", "ApiTokensSecretName": secret_name,
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
    bridge = lambdas.get_function(FunctionName=f"{stack}-bridge")["Configuration"]
    assert bridge["Handler"] == "pixelflow.ops.lambda_handlers.bridge_handler"
    queue_arn = boto3.client("sqs", region_name="us-east-1").get_queue_attributes(
        QueueUrl=outputs["UploadQueueUrl"], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    (mapping,) = lambdas.list_event_source_mappings(FunctionName=f"{stack}-bridge")["EventSourceMappings"]
    assert mapping["EventSourceArn"] == queue_arn and mapping["BatchSize"] == 10
    ecs = boto3.client("ecs", region_name="us-east-1")
    assert ecs.list_services(cluster=outputs["ClusterName"])["serviceArns"] == []

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
    listed = lambda_handlers.api_handler(_url_event("GET", "/v1/assets", {"authorization": f"Bearer {token}"}), None)
    assert listed["statusCode"] == 200
