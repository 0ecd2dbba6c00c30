// A program in another module that uses qemu-machine.invalid/qemumachine through a replace
// directive (or a vendor directory). TestUseFromAnotherModule builds and runs it; the README
// shows it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"time"

	"qemu-machine.invalid/qemumachine"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := qemumachine.LaunchJSON(ctx, `{"args": ["-machine", "none", "-nodefaults"], "accel": "tcg"}`)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	reply, err := m.Execute(ctx, "query-status", nil)
	if err != nil {
		log.Fatal(err)
	}
	var status struct{ Status string }
	if err := json.Unmarshal(reply, &status); err != nil {
		log.Fatal(err)
	}
	fmt.Println("status:", status.Status)
	_, err = m.Execute(ctx, "no-such-command", nil)
	var qe *qemumachine.Error
	if errors.As(err, &qe) {
		fmt.Println("QMP error class:", qe.QMPClass)
	}
	if err := m.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	code, _, err := m.ExitStatus()
	fmt.Println("exit code:", code, err)
}
