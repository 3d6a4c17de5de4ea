"""Shared files recorded before paths were per repository get their repository."""

from django.db import migrations


def repository_of_shared_files(apps, schema_editor):
    """Shared files recorded before paths were per repository: the repository of the
    tasks that declare them."""
    SharedFile = apps.get_model("fleet", "SharedFile")
    for shared in SharedFile.objects.filter(repository__isnull=True):
        task = shared.tasks.order_by("pk").first() or shared.owner_task
        if task is not None:
            shared.repository_id = task.repository_id
            shared.save(update_fields=["repository"])


class Migration(migrations.Migration):
    dependencies = [("fleet", "0005_planning")]

    operations = [migrations.RunPython(repository_of_shared_files, migrations.RunPython.noop)]
