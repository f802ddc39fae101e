from django.http import HttpRequest, HttpResponse


def overview_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("todo")
