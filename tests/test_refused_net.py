"""The net under every page's form: a transition refused where no view catches it goes
back to the page it came from with the reason, never an error page; the API keeps its
409."""

from __future__ import annotations

import pytest
from django.http import HttpResponse
from django.test import override_settings
from django.urls import path

from fleet.models import TransitionError

from .conftest import make_user

pytestmark = pytest.mark.django_db


def refuses(request):
    raise TransitionError("T-1 cannot start from 'merged' (allowed from: assigned)")


def fine(request):
    return HttpResponse("the page")


urlpatterns = [path("act/", refuses), path("page/", fine), path("api/v1/act", refuses)]


@override_settings(ROOT_URLCONF=__name__)
def test_an_uncaught_refusal_goes_back_to_its_page_with_the_reason(client):
    client.force_login(make_user("lea", "lead"))
    response = client.post("/act/", headers={"referer": "http://testserver/page/"})
    assert response.status_code == 302 and response["Location"] == "http://testserver/page/"
    stored = [str(m) for m in response.wsgi_request._messages]
    assert stored == [
        "Refused: T-1 cannot start from 'merged' (allowed from: assigned). Nothing changed."
    ]
    # A referer elsewhere is not followed.
    away = client.post("/act/", headers={"referer": "https://evil.example/"})
    assert away.status_code == 302 and away["Location"] == "/"


@override_settings(ROOT_URLCONF=__name__)
def test_the_api_is_not_redirected(client):
    with pytest.raises(TransitionError):
        client.post("/api/v1/act")


def test_a_stale_approve_names_the_person_who_approved_not_the_agent_that_started():
    """The wave moved on after the approval (an agent started it): the message still
    says who approved it, the state it is in now, and when."""
    from fleet.models import Event, Wave
    from fleet.views.refusals import state_note

    from .conftest import make_agent, make_wave

    wave = make_wave(status=Wave.RUNNING)
    approver = make_user("alma", "lead")
    Event.objects.record("wave.approve", by=approver, wave=wave)
    Event.objects.record("wave.start", by=make_agent(name="ivy"), wave=wave)
    note = state_note(wave)
    assert note.startswith("Wave 1 is running now (wave.approve by alma at ")
    assert "ivy" not in note
