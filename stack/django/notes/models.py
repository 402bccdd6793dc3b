from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.text[:50]

    def as_dict(self) -> dict:
        return {"id": self.id, "text": self.text, "created_at": self.created_at.isoformat()}
