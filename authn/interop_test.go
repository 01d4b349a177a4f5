package authn_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgwarden/pgwarden/authn"
)

// These tests sign in with pgx's client (an independent implementation of
// the PostgreSQL authentication methods) to a minimal in-process server that
// authenticates with this package. No PostgreSQL server is involved.

// fakeServer authenticates one connection with method ("scram", "md5" or
// "password") against the secret users[user], like PostgreSQL would, and
// returns the authentication error.
func fakeServer(conn net.Conn, method string, users map[string]authn.Secret) error {
	defer conn.Close()
	be := pgproto3.NewBackend(conn, conn)
	msg, err := be.ReceiveStartupMessage()
	if err != nil {
		return err
	}
	startup, ok := msg.(*pgproto3.StartupMessage)
	if !ok {
		return fmt.Errorf("unexpected startup message %T", msg)
	}
	user := startup.Parameters["user"]
	sec, known := users[user]

	authErr := func() error {
		switch method {
		case "scram":
			var srv *authn.SCRAMServer
			if known && sec.Kind == authn.SecretSCRAM {
				srv = authn.NewSCRAMServer(sec.SCRAM)
			} else if known && sec.Kind == authn.SecretPlain {
				srv = authn.NewSCRAMServerFromPlain(sec.Plain, 0)
			} else {
				srv = authn.NewMockSCRAMServer(user, 0)
			}
			be.Send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{authn.SCRAMMechanism}})
			if err := be.Flush(); err != nil {
				return err
			}
			be.SetAuthType(pgproto3.AuthTypeSASL)
			msg, err := be.Receive()
			if err != nil {
				return err
			}
			initial, ok := msg.(*pgproto3.SASLInitialResponse)
			if !ok || initial.AuthMechanism != authn.SCRAMMechanism {
				return fmt.Errorf("unexpected %T %+v", msg, msg)
			}
			first, err := srv.ServerFirst(initial.Data)
			if err != nil {
				return err
			}
			be.Send(&pgproto3.AuthenticationSASLContinue{Data: first})
			if err := be.Flush(); err != nil {
				return err
			}
			be.SetAuthType(pgproto3.AuthTypeSASLContinue)
			msg, err = be.Receive()
			if err != nil {
				return err
			}
			resp, ok := msg.(*pgproto3.SASLResponse)
			if !ok {
				return fmt.Errorf("unexpected %T", msg)
			}
			final, err := srv.ServerFinal(resp.Data)
			if err != nil {
				return err
			}
			be.Send(&pgproto3.AuthenticationSASLFinal{Data: final})
			return nil
		case "md5", "password":
			salt := [4]byte{0x01, 0x23, 0x45, 0x67}
			if method == "md5" {
				be.Send(&pgproto3.AuthenticationMD5Password{Salt: salt})
				be.SetAuthType(pgproto3.AuthTypeMD5Password)
			} else {
				be.Send(&pgproto3.AuthenticationCleartextPassword{})
				be.SetAuthType(pgproto3.AuthTypeCleartextPassword)
			}
			if err := be.Flush(); err != nil {
				return err
			}
			msg, err := be.Receive()
			if err != nil {
				return err
			}
			pw, ok := msg.(*pgproto3.PasswordMessage)
			if !ok {
				return fmt.Errorf("unexpected %T", msg)
			}
			if method == "md5" && known && authn.VerifyMD5(sec, user, salt, pw.Password) ||
				method == "password" && known && authn.VerifyPlain(sec, user, pw.Password) {
				return nil
			}
			return authn.ErrAuthFailed
		}
		return fmt.Errorf("unknown method %q", method)
	}()
	if authErr != nil {
		be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01",
			Message: fmt.Sprintf("password authentication failed for user %q", user)})
		be.Flush()
		return authErr
	}
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"})
	be.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{0, 0, 0, 1}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := be.Flush(); err != nil {
		return err
	}
	msg, err = be.Receive() // Terminate
	if err != nil {
		return err
	}
	if _, ok := msg.(*pgproto3.Terminate); !ok {
		return fmt.Errorf("unexpected %T after sign-in", msg)
	}
	return nil
}

// connect signs in as user/password with pgx against fakeServer and returns
// the client's and the server's errors.
func connect(t *testing.T, method string, users map[string]authn.Secret, user, password string) (clientErr, serverErr error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := pgconn.ParseConfig("host=127.0.0.1 port=5432 dbname=db sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Password = user, password
	clientSide, serverSide := net.Pipe()
	cfg.DialFunc = func(context.Context, string, string) (net.Conn, error) { return clientSide, nil }
	done := make(chan error, 1)
	go func() { done <- fakeServer(serverSide, method, users) }()
	conn, clientErr := pgconn.ConnectConfig(ctx, cfg)
	if clientErr == nil {
		conn.Close(ctx)
	} else {
		clientSide.Close()
	}
	select {
	case serverErr = <-done:
	case <-ctx.Done():
		t.Fatal("fake server did not finish")
	}
	return clientErr, serverErr
}

func TestPgxInterop(t *testing.T) {
	users := map[string]authn.Secret{
		"scram": authn.ParseSecret(authn.NewSCRAMSecret("s3cret \u00e4\u00f6", []byte("0123456789abcdef"), 4096).String()),
		"md5":   authn.ParseSecret(authn.MD5Secret("md5", "s3cret \u00e4\u00f6")),
		"plain": authn.ParseSecret("s3cret \u00e4\u00f6"),
	}
	// Every method × secret combination PostgreSQL supports.
	tests := []struct{ method, user string }{
		{"scram", "scram"},
		{"scram", "plain"},
		{"md5", "md5"},
		{"md5", "plain"},
		{"password", "scram"},
		{"password", "md5"},
		{"password", "plain"},
	}
	for _, tc := range tests {
		name := tc.method + "/" + tc.user
		t.Run(name, func(t *testing.T) {
			cerr, serr := connect(t, tc.method, users, tc.user, "s3cret \u00e4\u00f6")
			if cerr != nil || serr != nil {
				t.Fatalf("right password: client %v, server %v", cerr, serr)
			}
			cerr, serr = connect(t, tc.method, users, tc.user, "s3cret \u00e4\u00f6!")
			if cerr == nil || !errors.Is(serr, authn.ErrAuthFailed) {
				t.Fatalf("wrong password: client %v, server %v", cerr, serr)
			}
			var pgErr *pgconn.PgError
			if !errors.As(cerr, &pgErr) || pgErr.Code != "28P01" {
				t.Errorf("wrong password: client error %v, want 28P01", cerr)
			}
		})
	}

	t.Run("md5 with a SCRAM secret", func(t *testing.T) {
		if cerr, serr := connect(t, "md5", users, "scram", "s3cret \u00e4\u00f6"); cerr == nil || serr == nil {
			t.Fatalf("client %v, server %v", cerr, serr)
		}
	})
	t.Run("unknown user", func(t *testing.T) {
		cerr, serr := connect(t, "scram", users, "nobody", "s3cret \u00e4\u00f6")
		if cerr == nil || !errors.Is(serr, authn.ErrAuthFailed) {
			t.Fatalf("client %v, server %v", cerr, serr)
		}
	})
}
