"""Sign-in throttling: after FLEET_LOGIN_RATE failures for one username from one
address, that sign-in is refused (429, Retry-After, a form error) — even with the
right password — while other people sign in as usual; the admin's sign-in too."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from .conftest import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def test_failed_sign_ins_are_throttled_per_username_and_address(client, settings):
    settings.FLEET_LOGIN_RATE = "3/h"
    make_user("lena", "lead", password="right-pw-123")
    make_user("mona", "manager", password="other-pw-123")
    for _ in range(3):
        response = client.post("/accounts/login/", {"username": "lena", "password": "nope"})
        assert response.status_code == 200  # the usual form error
    refused = client.post("/accounts/login/", {"username": "lena", "password": "right-pw-123"})
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert "Too many failed sign-ins" in refused.content.decode()
    assert "_auth_user_id" not in client.session  # not signed in
    # Someone else, from the same address, is not held back by lena's typos.
    ok = client.post("/accounts/login/", {"username": "mona", "password": "other-pw-123"})
    assert ok.status_code == 302


def test_an_address_is_throttled_across_usernames_and_on_the_admin(client, settings):
    settings.FLEET_LOGIN_IP_RATE = "4/h"
    admin = make_user("root", password="root-pw-123")
    admin.is_staff = admin.is_superuser = True
    admin.save()
    for n in range(4):
        client.post("/accounts/login/", {"username": f"guess{n}", "password": "x"})
    refused = client.post("/admin/login/", {"username": "root", "password": "root-pw-123"})
    assert refused.status_code == 429 and "Too many failed sign-ins" in refused.content.decode()
    cache.clear()  # the window passes
    signed_in = client.post("/admin/login/", {"username": "root", "password": "root-pw-123"})
    assert signed_in.status_code == 302
