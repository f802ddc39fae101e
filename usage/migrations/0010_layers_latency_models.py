"""Latency samples and rollups move from the routing app to usage, their tables unchanged.

Usage ingests the samples (one per upstream attempt of a usage event) and rolls them up;
routing only reads them. Only Django's idea of which app owns the models changes
(``SeparateDatabaseAndState``): the tables keep their names and rows.
``routing/0006_layers_models_moved_out`` removes the routing side and moves the content
types, so the staff groups' permissions follow.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("usage", "0009_hosts_rollup_group_stats"),
        ("routing", "0005_scale_sample_once"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='LatencyRollup',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('deployment', models.CharField(max_length=100)),
                        ('provider', models.CharField(max_length=64)),
                        ('minute', models.DateTimeField()),
                        ('count', models.PositiveIntegerField(default=0)),
                        ('error_count', models.PositiveIntegerField(default=0)),
                        ('sum_ms', models.FloatField(default=0)),
                        ('min_ms', models.FloatField(null=True)),
                        ('max_ms', models.FloatField(null=True)),
                        ('histogram', models.JSONField(default=list)),
                        ('ttft_count', models.PositiveIntegerField(default=0)),
                        ('ttft_sum_ms', models.FloatField(default=0)),
                        ('ttft_min_ms', models.FloatField(null=True)),
                        ('ttft_max_ms', models.FloatField(null=True)),
                        ('ttft_histogram', models.JSONField(default=list)),
                        ('overhead_sum_ms', models.FloatField(default=0)),
                    ],
                    options={
                        'db_table': 'routing_latencyrollup',
                        'indexes': [models.Index(fields=['minute'], name='routing_lat_minute_dd8ab7_idx')],
                        'constraints': [models.UniqueConstraint(fields=('deployment', 'minute'), name='latency_rollup_unique')],
                    },
                ),
                migrations.CreateModel(
                    name='LatencySample',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('request_id', models.CharField(max_length=40)),
                        ('attempt', models.PositiveSmallIntegerField(default=1)),
                        ('created_at', models.DateTimeField(db_index=True)),
                        ('provider', models.CharField(max_length=64)),
                        ('deployment', models.CharField(max_length=100)),
                        ('model', models.CharField(max_length=200)),
                        ('ok', models.BooleanField(default=True)),
                        ('http_status', models.PositiveSmallIntegerField(default=200)),
                        ('stream', models.BooleanField(default=False)),
                        ('total_ms', models.FloatField(help_text='Gateway received request -> last byte sent.')),
                        ('upstream_ms', models.FloatField(help_text='Upstream call, connect to last byte.')),
                        ('ttft_ms', models.FloatField(blank=True, help_text='Streams: first token from the upstream.', null=True)),
                        ('overhead_ms', models.FloatField(help_text='total minus upstream: what the gateway added.')),
                    ],
                    options={
                        'db_table': 'routing_latencysample',
                        'indexes': [models.Index(fields=['deployment', 'created_at'], name='routing_lat_deploym_88b01d_idx')],
                        'constraints': [models.UniqueConstraint(fields=('request_id', 'attempt', 'created_at'), name='latency_sample_once')],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
