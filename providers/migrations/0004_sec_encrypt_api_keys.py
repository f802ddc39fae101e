"""Provider API keys encrypted at rest: the column becomes text holding a Fernet token.

The data step reads and writes the column with plain SQL (the historical model would
decrypt on read): every non-empty value that the configured keys cannot already
decrypt is encrypted. Running it twice changes nothing; the reverse decrypts.
"""

import django.core.validators
from django.db import migrations

import providers.fields


def _rows(schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT id, api_key FROM providers_provider WHERE api_key <> ''")
        return cursor.fetchall()


def _write(schema_editor, pk, value):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("UPDATE providers_provider SET api_key = %s WHERE id = %s", [value, pk])


def encrypt_stored_keys(apps, schema_editor):
    from providers.encryption import encrypt, key_index

    for pk, value in _rows(schema_editor):
        if key_index(value) is None:
            _write(schema_editor, pk, encrypt(value))


def decrypt_stored_keys(apps, schema_editor):
    from providers.encryption import decrypt, key_index

    for pk, value in _rows(schema_editor):
        if key_index(value) is not None:
            _write(schema_editor, pk, decrypt(value))


class Migration(migrations.Migration):

    dependencies = [
        ("providers", "0003_upstream_deadlines_output_limits"),
    ]

    operations = [
        migrations.AlterField(
            model_name="provider",
            name="api_key",
            field=providers.fields.EncryptedTextField(
                blank=True,
                help_text="Write-only; never shown back. Encrypted at rest (providers/encryption.py).",
                validators=[django.core.validators.MaxLengthValidator(500)],
            ),
        ),
        migrations.RunPython(encrypt_stored_keys, decrypt_stored_keys),
    ]
