from django.db import migrations, models


def number_sessions(apps, schema_editor):
    """Existing sessions numbered per agent, in the order they started."""
    AgentSession = apps.get_model("fleet", "AgentSession")
    counts: dict[int, int] = {}
    changed = []
    for session in AgentSession.objects.order_by("agent_id", "started_at", "pk").only(
        "pk", "agent_id"
    ):
        counts[session.agent_id] = counts.get(session.agent_id, 0) + 1
        session.number = counts[session.agent_id]
        changed.append(session)
    AgentSession.objects.bulk_update(changed, ["number"], batch_size=500)


class Migration(migrations.Migration):
    dependencies = [
        ("fleet", "0011_merge_batches"),
    ]

    operations = [
        migrations.AddField(
            model_name="agentsession",
            name="number",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.RunPython(number_sessions, migrations.RunPython.noop),
    ]
