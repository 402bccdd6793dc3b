from django.contrib import admin
from django.urls import path

from notes import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("internal/health", views.health),
    path("internal/notes", views.notes),
]
