// foodmesh service worker: shows a Web Push notification (the payload is JSON:
// title, body, url, notification_id); a repeat of one already shown replaces it (tag).
"use strict";

self.addEventListener("push", (event) => {
  const n = event.data ? event.data.json() : { title: "foodmesh", body: "" };
  event.waitUntil(self.registration.showNotification(n.title, {
    body: n.body, tag: n.notification_id, data: { url: n.url || "./" },
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(clients.openWindow(event.notification.data.url));
});
