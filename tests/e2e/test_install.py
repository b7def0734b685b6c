"""What a user's install of the provider beside this Airflow must give: a working Fernet.

Airflow encrypts connections and stored triggers with Fernet once ``[core] fernet_key`` is set. With
cryptography 51 on Airflow 2.11 to 3.1 that fails ("'MultiFernet' object has no attribute
'is_encrypted'"): every deferrable task fails when its trigger is stored, and every task reading a
connection. The constraints/ files and the README's install section pin ``cryptography<51`` there.
"""

from __future__ import annotations

import os
import subprocess
import sys

from cryptography.fernet import Fernet


def test_airflow_encrypts_and_decrypts_with_a_fernet_key(tmp_path) -> None:
    code = (
        "from airflow.models.crypto import get_fernet\n"
        "f = get_fernet()\n"
        "token = f.encrypt(b'kling')\n"
        "assert f.decrypt(token) == b'kling'\n"
        "assert getattr(f, 'is_encrypted', True)\n"
        "from airflow.models.connection import Connection\n"
        "c = Connection(conn_id='kling_fernet', conn_type='kling', password='secret-key')\n"
        "assert c.is_encrypted and c.password == 'secret-key'\n"
        "print('ok')\n"
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
    }
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
