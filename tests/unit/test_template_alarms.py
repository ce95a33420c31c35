"""Every alarm reaches the operator's topic when one is configured (and only then)."""

from typing import Any

from local.template import load_template


def alarms() -> dict[str, dict[str, Any]]:
    resources = load_template()["Resources"]
    return {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}


def test_the_template_has_alarms() -> None:
    assert {"PublisherFailureAlarm", "PollerLagAlarm", "PollerAuthFailedAlarm"} <= alarms().keys()


NOTIFY_TOPIC_IF_SET = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def test_every_alarm_notifies_the_alarm_topic_when_set() -> None:
    template = load_template()
    assert template["Conditions"]["HasAlarmTopic"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]
    }
    for name, properties in alarms().items():
        for actions in ("AlarmActions", "OKActions"):
            assert properties.get(actions) == NOTIFY_TOPIC_IF_SET, f"{name} {actions}"
