import io
import json
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

from accounts.models import User
from tests.factories import TEST_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_users", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def run_failing(*args: str) -> tuple[str, str, str]:
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("import_users", *args, stdout=out, stderr=err)
    return str(caught.value), out.getvalue(), err.getvalue()


def summary(output: str) -> dict[str, str]:
    line = output.strip().splitlines()[-1]
    return dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)


def sign_in(email: str, password: str) -> int:
    return (
        APIClient()
        .post(
            reverse("api:token-obtain"),
            {"email": email, "password": password},
            format="json",
        )
        .status_code
    )


def test_creates_users_with_hash_plain_and_absent_passwords(tmp_path):
    hashed = make_password("hashed-Pass-123")
    path = write(
        tmp_path,
        "u.csv",
        "email,username,password\n"
        f"hash@example.com,hashy,{hashed}\n"
        "plain@example.com,plainy,Plain-Pass-456\n"
        "none@example.com,,\n",
    )

    out, err = run(str(path))

    assert summary(out)["created"] == "3" and err == ""
    assert User.objects.get(email="hash@example.com").password == hashed
    assert sign_in("hash@example.com", "hashed-Pass-123") == 200
    assert sign_in("PLAIN@example.com", "Plain-Pass-456") == 200
    none = User.objects.get(email="none@example.com")
    assert not none.has_usable_password()
    assert none.username == "none"
    assert not User.objects.filter(is_staff=True).exists()


def test_email_in_other_case_merges_into_the_existing_user(tmp_path):
    user = UserFactory(email="alice@example.com", username="alice")
    path = write(
        tmp_path, "u.csv", "email,username,is_active\nALICE@Example.COM,alice2,\n"
    )

    out, _ = run(str(path))

    assert summary(out)["updated"] == "1" and summary(out)["created"] == "0"
    assert User.objects.count() == 1
    user.refresh_from_db()
    assert (user.email, user.username) == ("alice@example.com", "alice2")
    # No password column: the stored password is kept.
    assert user.check_password(TEST_PASSWORD)


def test_email_repeated_in_any_case_last_occurrence_wins(tmp_path):
    path = write(
        tmp_path,
        "u.csv",
        "email,username\nbob@example.com,first\nBOB@example.com,last\n",
    )

    out, err = run(str(path))

    assert User.objects.get().username == "last"
    assert summary(out)["superseded"] == "1"
    assert err == "line 2: superseded by line 3 (same email 'bob@example.com')\n"


def test_bad_lines_are_rejected_and_the_good_ones_load(tmp_path):
    path = tmp_path / "u.csv"
    path.write_bytes(
        b"email,username,team\n"
        b"ann@example.com,ann,red\n"
        b"caf\xe9@example.com,cafe,red\n"
        b'"bob@example.com,bob,blue\n'
        b"eve@example.com,eve,green\n"
    )

    message, out, err = run_failing(str(path))

    assert message == "2 row(s) rejected"
    assert err.splitlines() == [
        "line 1: unknown column(s) 'team'; expected email, username, password,"
        " is_active; ignored",
        "line 3: not valid UTF-8 text (byte 0xe9 at column 4)",
        "line 4: bad CSV: unexpected end of data on line 5, in a quoted field that"
        " starts on this line",
    ]
    assert sorted(User.objects.values_list("username", flat=True)) == ["ann", "eve"]
    assert summary(out)["created"] == "2"


def test_rerun_with_plain_passwords_changes_nothing(tmp_path):
    path = write(
        tmp_path,
        "u.csv",
        "email,username,password\ncarol@example.com,carol,Carol-Pass-789\n",
    )
    run(str(path))
    before = User.objects.get().password

    out, _ = run(str(path))

    assert summary(out)["unchanged"] == "1" and summary(out)["updated"] == "0"
    assert User.objects.get().password == before


def test_deactivating_revokes_refresh_tokens(tmp_path, tokens_for):
    user = UserFactory()
    refresh = tokens_for(user)["refresh"]
    path = write(tmp_path, "u.csv", f"email,is_active\n{user.email},false\n")

    run(str(path))

    user.refresh_from_db()
    assert user.is_active is False
    assert BlacklistedToken.objects.filter(token__user=user).exists()
    response = APIClient().post(
        reverse("api:token-refresh"), {"refresh": refresh}, format="json"
    )
    assert response.status_code == 401


def test_rejections_name_line_field_and_reason(tmp_path):
    UserFactory(email="taken@example.com", username="taken")
    path = write(
        tmp_path,
        "u.csv",
        "email,username,password,is_active\n"
        "ok@example.com,ok,,\n"  # line 2
        "not-an-email,,,\n"  # line 3
        "short@example.com,short,x7Q,\n"  # line 4
        "clash@example.com,taken,,\n"  # line 5
        "space@example.com,has space,,\n"  # line 6
        "flag@example.com,flag,,perhaps\n"  # line 7
        "twin1@example.com,twin,,\n"  # line 8
        "twin2@example.com,twin,,\n",  # line 9
    )

    message, out, err = run_failing(str(path))

    assert message == "6 row(s) rejected"
    assert err.splitlines() == [
        "line 3: email: Enter a valid email address.",
        "line 4: password: This password is too short. It must contain at least 8"
        " characters.",
        "line 5: username: A user with that username already exists.",
        "line 6: username: Enter a valid username. This value may contain only"
        " letters, numbers, and @/./+/-/_ characters.",
        "line 7: is_active: Must be a valid boolean.",
        "line 9: username: A user with that username already exists.",
    ]
    assert summary(out)["created"] == "2"
    assert set(User.objects.values_list("username", flat=True)) == {
        "taken",
        "ok",
        "twin",
    }


def test_derived_username_that_is_taken_gets_a_suffix(tmp_path):
    UserFactory(email="dave@other.example", username="dave")
    path = write(tmp_path, "u.csv", "email\ndave@example.com\n")

    run(str(path))

    username = User.objects.get(email="dave@example.com").username
    assert username.startswith("dave-") and len(username) == len("dave-") + 6


def test_strict_and_dry_run(tmp_path):
    path = write(
        tmp_path,
        "u.csv",
        "email\ngood@example.com\nbad\nlater@example.com\n",
    )

    message, _, _ = run_failing(str(path), "--strict")
    assert message == "--strict: stopped at line 3: email: Enter a valid email address."
    assert not User.objects.exists()

    message, out, _ = run_failing(str(path), "--dry-run")
    assert out.startswith("import_users: dry-run read=3 created=2")
    assert message == "1 row(s) rejected"
    assert not User.objects.exists()


def test_jsonl_from_standard_input(monkeypatch):
    data = "\n".join(
        json.dumps(row)
        for row in [
            {"email": "erin@example.com", "username": "erin"},
            {"email": "frank@example.com", "is_active": False},
        ]
    ).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))

    out, _ = run("-", "--format", "jsonl")

    assert summary(out)["created"] == "2"
    assert User.objects.get(email="frank@example.com").is_active is False


def test_errors_file_keeps_rows_to_fix(tmp_path):
    path = write(tmp_path, "u.csv", "email,username\nbad-address,bad\n")
    errors = tmp_path / "errors.jsonl"

    run_failing(str(path), "--errors", str(errors), "--format", "csv")

    # --errors is written in the input format, whatever its own name.
    assert errors.read_text().splitlines() == [
        "email,username,password,is_active,_line,_errors",
        "bad-address,bad,,,2,email: Enter a valid email address.",
    ]


def test_batch_queries_do_not_grow_with_the_batch(tmp_path):
    small = write(
        tmp_path, "s.csv", "email\n" + "".join(f"s{i}@example.com\n" for i in range(2))
    )
    big = write(
        tmp_path,
        "b.csv",
        "email\n" + "".join(f"b{i}@example.com\n" for i in range(150)),
    )

    with CaptureQueriesContext(connection) as few:
        run(str(small))
    with CaptureQueriesContext(connection) as many:
        run(str(big))

    assert len(many.captured_queries) == len(few.captured_queries)


def test_user_list_shows_imported_users_at_once(
    tmp_path, auth_client, staff_user, django_capture_on_commit_callbacks
):
    client = auth_client(staff_user)
    url = reverse("api:user-list")
    client.get(url)
    client.get(url)
    path = write(tmp_path, "u.csv", "email,username\nnewbie@example.com,newbie\n")

    with django_capture_on_commit_callbacks(execute=True):
        run(str(path))

    usernames = [u["username"] for u in client.get(url).json()["results"]]
    assert "newbie" in usernames
