#!/bin/sh
# The app of the compose stack: every request takes 100 ms of work. busybox's httpd runs a
# process per request and queues nothing: alone under load it piles up; behind TCPie it
# sees at most TCPIE_WORKERS requests at once.
sleep 0.1
printf 'Content-Type: text/plain\r\n\r\nhello from the app behind TCPie\n'
