"""The two staff groups the gateway ships (docs/configuration.md, "Staff permissions").

- ``operators``: providers, deployments, prices, routing rules, client keys and teams
  (add, change, delete, view), the routing settings (view, change: the active strategy,
  also through ``POST /admin/routing/strategy``) and the latency pages (view).
- ``finance``: cost reports (``usage.view_cost_reports``: ``/v1/reports/costs``, the
  admin's report and export) and usage records, read-only.

The definition is frozen here, as migrations should be. Permissions are normally
created after all migrations ran (post_migrate), so they are created first. Running it
again adds what is missing and removes nothing an administrator added.
"""

from django.db import migrations

FULL = ("add", "change", "delete", "view")

GROUPS = {
    "operators": {
        ("providers", "provider"): FULL,
        ("providers", "deployment"): FULL,
        ("providers", "pricingrow"): FULL,
        ("routing", "routingrule"): FULL,
        ("routing", "ruletarget"): FULL,
        ("routing", "routingsettings"): ("view", "change"),
        ("routing", "latencysample"): ("view",),
        ("routing", "latencyrollup"): ("view",),
        ("accounts", "clientkey"): FULL,
        ("accounts", "team"): FULL,
    },
    "finance": {
        ("usage", "usagerecord"): ("view", "view_cost_reports"),
    },
}


def create_groups(apps, schema_editor):
    from django.apps import apps as global_apps
    from django.contrib.auth.management import create_permissions

    for label in ("accounts", "providers", "routing", "usage"):
        create_permissions(global_apps.get_app_config(label), apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, models in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        for (app_label, model), actions in models.items():
            codenames = [a if a.startswith("view_") else f"{a}_{model}" for a in actions]
            group.permissions.add(
                *Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)
            )


def delete_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=list(GROUPS)).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0002_upstream_budget_precision"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("providers", "0004_sec_encrypt_api_keys"),
        ("routing", "0003_sec_config_triggers"),
        ("usage", "0003_sec_cost_report_permission"),
    ]

    operations = [migrations.RunPython(create_groups, delete_groups)]
